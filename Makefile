.PHONY: install demo test lint lac
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
