"""Reading and writing: images (checked decoding), masks (RLE, PNG, boxes), COCO
annotations (read and write) and the exports shared by the command line and the app."""
