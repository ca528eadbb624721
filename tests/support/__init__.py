"""Helpers shared by the tests, one home each (the test modules import nothing from one
another; fixtures are in the conftest.py of the nearest common folder):

- checkpoints: the tiny OpenCLIP model's config, TrainConfigs and checkpoints of it
- crawls: the test query list, candidate pools, `wit crawl` arguments, crawl outputs in
  img2dataset's layout (Sample, write_download, pool) and their samples read back
- faults: a full disk (a small tmpfs), kill -9 during an `--overwrite` rerun
- images: plain, noise, drawn and photo-like JPEGs; ImageFolders of drawn images
- outputs: the files and finished-unit markers a stage leaves in a directory
- shards: WebDataset shards for the trainer, and SHARDS dirs with their manifest.json
- testweb: the local test web (`python -m tests.support.testweb`)
- watgen: WAT files of chosen pages and images
- wikidump: MediaWiki exports in every layout, random corpora with reference counts
- witcli: the `wit` command in a subprocess, and its one-line errors

Running any module in a subprocess (`run_module`), `free_port` and REPO are in tests/cli.py."""
