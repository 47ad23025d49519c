"""Scoring captions against class texts: text encoders and similarity thresholds."""
