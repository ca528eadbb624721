"""`wit crawl`: candidate pool -> substring matching -> balancing -> download with img2dataset."""

import os

# img2dataset imports albumentations, which otherwise checks for updates over the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
