.PHONY: install demo test lint lac lac-lite conformance corpus lac-224 lac-default lac-224-lite lac-default-lite
install:
	python3 -m pip install -e ".[test]"
demo:
	adjinv demo --out demo-out
test:
	python3 -m pip install -q -e ".[test]" && python3 -m pytest -q
lint:
	ruff check src tests benchmarks
# Re-creates the `paper-colour` variant (see README, "The bundled LACs"): the embedded
# training split, validation photos for the schedule and the best checkpoint.
lac:
	python3 benchmarks/train_embedded.py --objective paper --photos colour --steps 150 \
	  --validate-every 15 --patience 3 --keep-every 15 --threads 1 \
	  --out lac-train/paper-colour.lac.safetensors
	python3 -c "from adjinv.lacs.checkpoint import export_checkpoint as e; \
	  e('lac-train/paper-colour.lac.safetensors', \
	    'src/adjinv/lacs/weights/efficientnet_lite0-paper-colour.lac.safetensors', variant='paper-colour')"
# The same 96 px recipe for EfficientNet-Lite1 and Lite2 (their `paper-colour` variants).
lac-lite:
	for v in 1 2; do \
	  python3 benchmarks/train_embedded.py --encoder efficientnet_lite$$v --objective paper \
	    --photos colour --steps 150 --validate-every 15 --patience 3 --keep-every 15 --threads 1 \
	    --out lac-train/lite$$v-paper-colour.lac.safetensors && \
	  python3 -c "from adjinv.lacs.checkpoint import export_checkpoint as e; \
	    e('lac-train/lite'$$v'-paper-colour.lac.safetensors', \
	      'src/adjinv/lacs/weights/efficientnet_lite'$$v'-paper-colour.lac.safetensors', variant='paper-colour')"; \
	done
# Every torchvision classification builder and the timm families (long); then the results
# file and docs/compatibility.md from a fresh run.
conformance:
	python3 -m pytest -q -m conformance tests/test_conformance.py
	python3 -m adjinv.encoders.conformance --out benchmarks/results/conformance.json --doc docs/compatibility.md
# The photo corpus (Debian wallpaper photographs + the embedded photos) into corpus/, with
# its manifest; the committed copy is benchmarks/corpus/manifest.json (needs apt-get, dpkg).
corpus:
	python3 -m adjinv.paper.data.corpus corpus --manifest-copy benchmarks/corpus/manifest.json
# LACs at 224 px on the corpus, after `make corpus` (hours on 2 cores; re-run to resume): Eq. 9 and Eq. 31.
lac-224:
	for obj in paper multipath; do \
	  python3 benchmarks/train_embedded.py --photos corpus --size 224 --batch-size 1 \
	    --xhat sampled --channel-fraction 0.15 --top 0.5 --lr 0.01 --schedule constant \
	    --steps 4000 --validate-every 80 --patience 5 --keep-every 40 --threads 1 --min-crop 0.5 \
	    --objective $$obj --out benchmarks/results/training/lite0-224/$$obj.lac.safetensors; \
	done
# The default LACs: the Eq. 9 run's best validation check (after `make corpus lac-224`).
lac-default:
	python3 benchmarks/export_best.py benchmarks/results/training/lite0-224/paper.lac.safetensors \
	  src/adjinv/lacs/weights/efficientnet_lite0.lac.safetensors --variant paper-224
# Lite1 and Lite2 by the 224 px recipe (Eq. 9), resumable like lac-224.
lac-224-lite:
	for v in 1 2; do \
	  python3 benchmarks/train_embedded.py --encoder efficientnet_lite$$v --photos corpus --size 224 \
	    --batch-size 1 --xhat sampled --channel-fraction 0.15 --top 0.5 --lr 0.01 --schedule constant \
	    --steps 4000 --validate-every 80 --patience 5 --keep-every 40 --threads 1 --min-crop 0.5 \
	    --objective paper --out benchmarks/results/training/lite$$v-224/paper.lac.safetensors; \
	done
# Their defaults: each run's best validation check (after `make corpus lac-224-lite`).
lac-default-lite:
	for v in 1 2; do \
	  python3 benchmarks/export_best.py benchmarks/results/training/lite$$v-224/paper.lac.safetensors \
	    src/adjinv/lacs/weights/efficientnet_lite$$v.lac.safetensors --variant paper-224; \
	done
