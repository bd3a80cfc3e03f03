"""Sets of images: proposals for every image of a folder (a phrase, examples, a vocabulary)
from one shared analysis per image, resumable folder runs (locally or on Ray Data), and the
safe reading of uploaded archives."""
