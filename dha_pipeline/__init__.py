"""dha: joint Data-augmentation, Hyper-parameter and Architecture optimization for image classification.

Importing this package is cheap and imports neither torch nor torchvision, so
`dha predict` can run with onnxruntime, numpy and Pillow alone.
"""

__version__ = "0.1.0"
