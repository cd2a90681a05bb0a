.PHONY: install demo test lint lac lac-lite conformance
install:
	python3 -m pip install -e ".[test]"
demo:
	adjinv demo --out demo-out
test:
	python3 -m pip install -q -e ".[test]" && python3 -m pytest -q
lint:
	ruff check src tests benchmarks
# Re-creates the bundled LAC checkpoint (see README, "The bundled LACs"): the embedded
# training split, validation photos for the schedule and the best checkpoint.
lac:
	python3 benchmarks/train_embedded.py --objective paper --photos colour --steps 150 \
	  --validate-every 15 --patience 3 --keep-every 15 --threads 1 \
	  --out lac-train/paper-colour.lac.safetensors
	python3 -c "from adjinv.lacs.checkpoint import export_checkpoint as e; \
	  e('lac-train/paper-colour.lac.safetensors', \
	    'src/adjinv/lacs/weights/efficientnet_lite0.lac.safetensors', variant='paper-colour')"
# The same recipe for EfficientNet-Lite1 and Lite2 (the capacity comparison, O3).
lac-lite:
	for v in 1 2; do \
	  python3 benchmarks/train_embedded.py --encoder efficientnet_lite$$v --objective paper \
	    --photos colour --steps 150 --validate-every 15 --patience 3 --keep-every 15 --threads 1 \
	    --out lac-train/lite$$v-paper-colour.lac.safetensors && \
	  python3 -c "from adjinv.lacs.checkpoint import export_checkpoint as e; \
	    e('lac-train/lite'$$v'-paper-colour.lac.safetensors', \
	      'src/adjinv/lacs/weights/efficientnet_lite'$$v'.lac.safetensors', variant='paper-colour')"; \
	done
# Every torchvision classification builder and the timm families (long); then the results
# file and docs/compatibility.md from a fresh run.
conformance:
	python3 -m pytest -q -m conformance tests/test_conformance.py
	python3 -m adjinv.encoders.conformance --out benchmarks/results/conformance.json --doc docs/compatibility.md
