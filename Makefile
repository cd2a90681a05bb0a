.PHONY: install demo test lint lac conformance
install:
	python3 -m pip install -e ".[test]"
demo:
	adjinv demo --out demo-out
test:
	python3 -m pip install -q -e ".[test]" && python3 -m pytest -q
lint:
	ruff check src tests benchmarks
# Re-creates the bundled LAC checkpoint (see README, "The bundled LACs").
lac:
	adjinv train --encoder efficientnet_lite0 --steps 40 --size 96 --lr 0.02 --seed 0 \
	  --checkpoint-every 5 --out lac-train/efficientnet_lite0.lac.safetensors \
	  --export src/adjinv/weights/efficientnet_lite0.lac.safetensors
# Every torchvision classification builder and the timm families (long); then the results
# file and docs/compatibility.md from a fresh run.
conformance:
	python3 -m pytest -q -m conformance tests/test_conformance.py
	python3 -m adjinv.encoders.conformance --out benchmarks/results/conformance.json --doc docs/compatibility.md
