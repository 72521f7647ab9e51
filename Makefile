# The two commands a fresh machine needs: `make demo` and `make test`. Each runs the set-up first
# (Debian packages, the pinned ONNX Runtime and torch wheels in .venv, cargo's environment).

SHELL := /bin/bash
CARGO ?= cargo
PREFIX_BIN ?= $(HOME)/.local/bin
GST_USER_PLUGINS ?= $(HOME)/.local/share/gstreamer-1.0/plugins
DERAIN_LIB ?= $(HOME)/.local/share/derain/lib
DATA ?= $(abspath ../shared/data)
# `make eval-detect`: MODEL empty = an identity stand-in (no trained model ships yet).
MODEL ?=
DETECTOR ?= $(DATA)/models/yolox_nano_416.onnx
PAIRS ?= $(DATA)/pairs/carla-dev
PROVIDER ?= auto

.PHONY: val-data setup build release train-build test lint demo bench eval-detect install uninstall clean

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --workspace

release: setup
	$(CARGO) build --workspace --release

# Validation pairs for the training configs: rain rendered over the BDD frames, which no config
# trains on (the measuring sets stay untouched).
val-data: build
	target/debug/derain synth --clean $(DATA)/clean-driving/bdd --out runs/val-bdd \
		--preset mixed --seed 11 --downscale 2

# The `derain` tool with the trainer (links libtorch from .deps/libtorch; the plugin never does).
train-build: setup
	$(CARGO) build --release -p derain --features train

test: setup
	$(CARGO) fmt --all -- --check
	# `cargo test` builds the plugin as an rlib only; the gst-launch/gst-inspect tests need the .so.
	$(CARGO) build -p gst-plugin-derain
	$(CARGO) test --workspace
	# The trainer (tch) on its own: a workspace-wide --features would reach the plugin too.
	$(CARGO) test -p derain --features train --lib -- train::
	$(CARGO) test -p derain --features train --test train_step --test train_checkpoint \
		--test train_export --test train_run --test train_kill

lint: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p derain --all-targets --features train -- -D warnings

# INPUT=drive.mp4 derains your own footage; it is checked before anything long is built.
INPUT ?=
demo:
	@if [ -n "$(INPUT)" ] && [ ! -r "$(INPUT)" ]; then \
		echo "make demo: cannot read INPUT=$(INPUT) (give a video file GStreamer can decode)" >&2; \
		exit 1; fi
	@$(MAKE) --no-print-directory release
	@INPUT="$(INPUT)" ./scripts/demo.sh

bench: release
	$(CARGO) bench --bench convert
	$(CARGO) bench --bench synth
	# The footage goal is stated for one core: build first, then run the bench pinned to CPU 0.
	$(CARGO) bench --bench footage --no-run
	taskset -c 0 $(CARGO) bench --bench footage
	$(CARGO) bench -p gst-plugin-derain --bench element

# Does deraining help the detector? mAP@0.5 on rainy vs derained pairs (see README).
EVAL_DETECT = MODEL="$(MODEL)" DETECTOR="$(DETECTOR)" PAIRS="$(PAIRS)" PROVIDER="$(PROVIDER)" \
	./scripts/eval-detect.sh
eval-detect: setup
	@$(EVAL_DETECT) --check-inputs
	$(CARGO) build --release --bin derain
	@$(EVAL_DETECT)

install: release
	install -d $(PREFIX_BIN) $(GST_USER_PLUGINS) $(DERAIN_LIB)
	install -m 755 target/release/derain $(PREFIX_BIN)/derain
	install -m 644 target/release/libgstderain.so $(GST_USER_PLUGINS)/libgstderain.so
	install -m 644 $$(readlink -f .deps/libonnxruntime.so) $(DERAIN_LIB)/libonnxruntime.so
	@echo "installed: $(PREFIX_BIN)/derain, $(GST_USER_PLUGINS)/libgstderain.so, $(DERAIN_LIB)/libonnxruntime.so"
	@echo "check with: gst-inspect-1.0 derain"

uninstall:
	rm -f $(PREFIX_BIN)/derain $(GST_USER_PLUGINS)/libgstderain.so $(DERAIN_LIB)/libonnxruntime.so

clean:
	$(CARGO) clean
