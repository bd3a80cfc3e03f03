"""Object galleries: records + faiss index (gallery), on-disk format (store), index choice
(index), building from images or COCO (build, ingest, ray_runner), browsing large
galleries (browse), thumbnails (thumbs) and the example gallery the app ships (examples)."""
