"""The on-disk contracts between the stages (../shared/DESIGN.md), each written once.

- `errors`: the one exception type for bad input;
- `atomic`: atomic file output (fsync, then rename) and atomic directory swaps;
- `globs`: the one glob expander (local paths and fsspec urls, brace patterns);
- `uids`: the uid of a url and the check of a uid;
- `images`: the image header check with the pixel cap;
- `tars`: the one safe WebDataset tar reader and the deterministic tar writer;
- `queries`, `crawl`, `shards`: the QUERIES, CRAWL and SHARDS dirs' files;
- `text`, `balance`: the exact semantics stages share: MetaCLIP's text spacing and balancing;
- `workdir`: how a data stage claims its output, records finished units and resumes.
Stages and `train/` import this package; it imports none of them.
"""
