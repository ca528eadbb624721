"""`wit build-queries`: the query list from Wikipedia, page views and WordNet."""
