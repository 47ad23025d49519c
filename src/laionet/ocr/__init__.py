"""`laionet ocr`: recognise the text in each image and flag rows whose image shows its class name (spec §4.3)."""

from laionet.ocr.match import name_in_text

__all__ = ["name_in_text"]
