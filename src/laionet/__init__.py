"""laionet: recreate ImageNet from web image-text data and measure how it differs."""

__version__ = "0.1.0"
