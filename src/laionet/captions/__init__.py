"""ImageNet-Captions (spec §9.1–9.2): import the captions, compare each caption with every class query, plot.

    import    imagenet_captions.json -> ic.parquet (uid, filename, wnid, TEXT[, image])     `ingest`
    synsets   caption-to-query cosines, rank of the true class, proportion p of more similar
              false classes                                                               `synsets`
    plot      the CDF of p, mean p per similarity bin, the similarity histogram          `plot`
"""
