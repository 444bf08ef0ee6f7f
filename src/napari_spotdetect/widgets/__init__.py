"""napari dock widgets. Each module holds one widget; ``workers`` holds the thread plumbing they share."""
