"""The base class of each kind of model, and code shared by a family of models (torchvision detectors,
promptable segmenters, Siamese trackers, SAM 2)."""
