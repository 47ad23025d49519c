"""ImageNet classifiers over local or downloaded images: `laionet predict` (spec §6).

- `models`: classifiers named by spec strings (`timm:NAME`, `hf:NAME_OR_PATH`), outputs mapped to wnids
  by class index and the head's synset list.
- `datasets`: local image datasets (folder-per-wnid, ImageNet val, ImageNet-V2) as a uid/image/wnid table.
- `run`: one pass over the images for several models, in resumable chunks, to `predictions.parquet`.
- `cli`: the `laionet predict` command.
"""
