# The two commands a fresh machine needs: `make demo` and `make test`. Each runs the set-up first
# (Debian packages, the pinned ONNX Runtime wheel in .venv, cargo's environment; `make test`, the
# trainer's targets and `make lint` also the torch wheel, which only the trainer links).

SHELL := /bin/bash
CARGO ?= cargo
PREFIX_BIN ?= $(HOME)/.local/bin
GST_USER_PLUGINS ?= $(HOME)/.local/share/gstreamer-1.0/plugins
DERAIN_LIB ?= $(HOME)/.local/share/derain/lib
DATA ?= $(abspath ../shared/data)
# `make eval-detect` / `make eval-dev`: MODEL defaults to the shipped derain-lite (eval-detect
# stands in an identity model where none ships).
MODEL ?=
DETECTOR ?= $(DATA)/models/yolox_nano_416.onnx
PAIRS ?= $(DATA)/pairs/carla-dev
PROVIDER ?= auto

.PHONY: camvid-unpaired rain-detector eval-rain-detector val-seq05 val-data setup setup-runtime build release train-build test lint demo bench bench-gpu eval-dev eval-detect soak \
	latency fuzz install uninstall clean

setup:
	@./scripts/setup.sh

# What the element, the demo and the `derain` tool without the trainer need: everything but the
# torch wheel (about 4.8 GB), which only the trainer links (`make train-build`, `make test`).
setup-runtime:
	@SETUP_TORCH=0 ./scripts/setup.sh

build: setup-runtime
	$(CARGO) build --workspace

release: setup-runtime
	$(CARGO) build --workspace --release

# Validation pairs for the training configs: rain rendered over the BDD frames, which no config
# trains on (the measuring sets stay untouched).
val-data: build
	target/debug/derain synth --clean $(DATA)/clean-driving/bdd --out runs/val-bdd \
		--preset mixed --seed 11 --downscale 2
	# The dry-frame validation: the six clean frames configs/clean-train.txt keeps out (linked,
	# not copied), and rain rendered over them for the rain side of the same choice.
	mkdir -p runs/val-dry
	for f in kitti/image_2/000000.png kitti/image_2/000001.png kitti/image_2/000002.png \
		udacity/stills/solidYellowCurve2.jpg udacity/stills/test4.jpg \
		udacity/stills/whiteCarLaneSwitch.jpg; do \
		ln -sfn $(DATA)/clean-driving/$$f runs/val-dry/$$(echo $$f | tr / _); done
	target/debug/derain synth --clean runs/val-dry --out runs/val-dry-rain \
		--preset mixed --seed 12
	# The same frames 2x and 4x smaller (scene detail packed densely, as in a small photo): rain
	# over them, and dry with drawn thin lines (scripts/eval-val.sh scores all of these).
	for s in 2 4; do \
	  target/debug/derain synth --clean runs/val-dry --out runs/val-dry-x$$s \
	    --preset mixed --seed 21 --downscale $$s && \
	  target/debug/derain synth --clean runs/val-dry --out runs/val-dry-lines-x$$s \
	    --preset mixed --seed 22 --downscale $$s --line-negatives 1 || exit 1; done

# The city validation split (CamVid Seq05VD, 171 frames no config trains on): dry, and rain of
# several kinds rendered over it, seeded (scripts/eval-seq05.sh scores a model on all of it).
# streaks = the mixed preset alone; veil and drops = the driving effects each alone (no streaks).
SEQ05 := $(DATA)/clean-driving/camvid/Seq05VD
val-seq05: build
	@test -d "$(SEQ05)" || { echo "make val-seq05: $(SEQ05) is missing (../shared/data)" >&2; exit 1; }
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/light --preset light --seed 31
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/heavy --preset heavy --seed 32
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/driving --preset driving --seed 33
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/streaks --preset mixed --seed 34
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/veil --preset driving --seed 35 \
		--no-streaks --scattering-veil 1 --drops 0
	target/debug/derain synth --clean $(SEQ05) --out runs/val-seq05/drops --preset driving --seed 36 \
		--no-streaks --drops 1 --scattering-veil 0

# The unpaired one-domain set (CamVid's three training drives, configs/camvid-half-a.txt and
# camvid-half-b.txt from `derain unpaired-split`): rain rendered over half B only, rainy frames
# without their clean partners, for the configs/camvid-*.toml runs that check whether ANLCL
# learns where PSNR can judge it (validation: make val-seq05).
camvid-unpaired: train-build
	target/release/derain synth --rainy-only --clean configs/camvid-half-b.txt \
		--out runs/camvid-unpaired/mixed --preset mixed --seed 41
	target/release/derain synth --rainy-only --clean configs/camvid-half-b.txt \
		--out runs/camvid-unpaired/driving --preset driving --seed 42

# The learned rain detector, trained with leave-one-source-out (its held-out scores calibrate it
# and set its threshold; per-source AUCs go into its card): five dry cameras and five real-rain
# sources, rain rendered over the dry frames, CamVid Seq05VD kept out for validation. About 50
# minutes on 2 CPU cores. OUT=models/rain-detector.onnx would ship it (embedded at the next build).
RD_OUT ?= runs/rain-detector.onnx
rain-detector: train-build
	target/release/derain rain-detector fit --cv --steps 2000 \
		--dry camvid-0001TP=$(DATA)/clean-driving/camvid/0001TP \
		--dry camvid-0006R0=$(DATA)/clean-driving/camvid/0006R0 \
		--dry camvid-0016E5=$(DATA)/clean-driving/camvid/0016E5 \
		--dry kitti=$(DATA)/clean-driving/kitti-road,$(DATA)/clean-driving/kitti/image_2 \
		--dry udacity=$(DATA)/clean-driving/udacity/highway-960x540.mp4,$(DATA)/clean-driving/udacity/highway-1280x720.mp4,$(DATA)/clean-driving/udacity/stills \
		--rainy mwd-rain=$(DATA)/real-rain/mwd-rain \
		--rainy spac-ra1=$(DATA)/real-rain/spac-ra1 \
		--rainy j4rnet-courtyard=$(DATA)/real-rain/j4rnet-courtyard \
		--rainy nturain-b1-vehicle=$(DATA)/unpaired-synthetic-rain/nturain-b1-vehicle \
		--rainy photos=$(DATA)/real-rain/ddn-street,$(DATA)/real-rain/idcgan \
		--val-dry $(DATA)/clean-driving/camvid/Seq05VD \
		--report $(RD_OUT:.onnx=.json) --out $(RD_OUT)

# A rain detector (MODEL=file.onnx) measured once on the dev sets: dry = the pairs' clean frames
# and BDD; rainy = the pairs' rainy frames, SPAC-RB2 and the raindrops.
eval-rain-detector: release
	@test -n "$(MODEL)" || { echo "make eval-rain-detector: give MODEL=detector.onnx" >&2; exit 1; }
	target/release/derain rain-detector eval --model $(MODEL) \
		--dry $(DATA)/pairs/rain12/clean $(DATA)/pairs/carla-dev/clean $(DATA)/pairs/nturain-a1/clean $(DATA)/clean-driving/bdd \
		--rainy $(DATA)/pairs/rain12/rainy $(DATA)/pairs/carla-dev/rainy $(DATA)/pairs/nturain-a1/rainy \
		$(DATA)/real-rain/spac-rb2-vehicle $(DATA)/real-rain/raindrops-on-glass

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
		--test train_export --test train_import --test train_run --test train_kill --test train_gpu
	# GPU tests are #[ignore]d, so a machine without a GPU reports them as ignored, never passed.
	@if ! { command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; }; then \
	  echo "make test: no NVIDIA GPU here: the GPU tests (tests/gpu.rs, tests/train_gpu.rs," \
	    "plugins/gst-derain/tests/gpu.rs) are ignored, not passed: the GPU path is unmeasured"; \
	else \
	  $(CARGO) test -p derain --features train --test train_gpu -- --ignored || exit 1; \
	  if [ -f .deps/gpu.env ]; then \
	    . .deps/gpu.env && $(CARGO) test -p derain --features cuda --test gpu -- --ignored && \
	      $(CARGO) test -p gst-plugin-derain --features cuda --test gpu -- --ignored || exit 1; \
	  else \
	    echo "make test: a GPU is here but ONNX Runtime is the CPU build: run make setup GPU=1" \
	      "for the provider and frame-conversion tests (not run)"; \
	  fi; \
	fi

lint: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p derain --all-targets --features train -- -D warnings
	# The GPU frame path (feature cuda) is linted here too, so it keeps compiling without a GPU.
	$(CARGO) clippy -p derain-core -p derain -p gst-plugin-derain --all-targets \
		--features derain-core/cuda,derain/cuda,gst-plugin-derain/cuda -- -D warnings

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
	# The shipped models through the element (goal for derain-lite: 30 fps at 640x360, 10 at 1280x720).
	@for m in models/derain-lite.onnx models/derain-r9.onnx; do \
	  if [ -f "$$m" ]; then BENCH_MODEL="$(CURDIR)/$$m" $(CARGO) bench -p gst-plugin-derain --bench element || exit 1; \
	  else echo "bench: $$m not shipped yet"; fi; done

# GPU speed (issue 7): element throughput and p99 at 1920x1080 and 1280x720, TensorRT FP16 and
# CUDA FP32, and end to end from H.264. Needs an NVIDIA GPU and `make setup GPU=1`; refuses otherwise.
bench-gpu: setup
	@command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 || { \
		echo "make bench-gpu: refusing: no NVIDIA GPU here (nvidia-smi finds none); nothing measured" >&2; \
		exit 1; }
	@test -f .deps/gpu.env || { \
		echo "make bench-gpu: the GPU build of ONNX Runtime is not set up: run make setup GPU=1" >&2; \
		exit 1; }
	. .deps/gpu.env && $(CARGO) bench -p gst-plugin-derain --features cuda --bench gpu

# The GPU path in one call (issue 30). gpu-bundle: everything scripts/gpu-check.sh needs on an
# NVIDIA GPU machine without Rust, GStreamer or network (binaries with the cuda and train
# features, GPU test executables, GStreamer, ONNX Runtime's CPU library, models, a clip), in
# gpu-bundle/, at most 64 MiB. On the GPU machine: scripts/gpu-check.sh gpu-bundle (report in $OUT).
.PHONY: gpu-bundle gpu-check-cpu
gpu-bundle: setup
	@./scripts/gpu-bundle.sh

# The same check on this CPU, from a copy of the bundle in an empty folder with only the bundle and
# libtorch (TORCH_LIB, this tree's torch wheel) on the library path: fails when a step that needs
# no GPU fails, a bad input is not handled or a library is missing. Report in target/gpu-check-cpu/.
gpu-check-cpu: gpu-bundle
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; cp -a gpu-bundle "$$tmp/"; \
	torch="$$(readlink -f .deps/libtorch)"; rm -rf target/gpu-check-cpu; \
	(cd "$$tmp" && env -i HOME="$$HOME" PATH=/usr/bin:/bin TMPDIR="$${TMPDIR:-/tmp}" GPU_CHECK_CPU=1 \
	  TORCH_LIB="$$torch/lib" TORCH_PYTHON="$(CURDIR)/.venv/bin/python" OUT="$$tmp/out" \
	  bash gpu-bundle/gpu-check.sh gpu-bundle); rc=$$?; \
	mkdir -p target && cp -r "$$tmp/out" target/gpu-check-cpu; \
	for f in gpu-report.md gpu-report.json; do \
	  test -s "target/gpu-check-cpu/$$f" || { echo "make gpu-check-cpu: no $$f written" >&2; exit 1; }; done; \
	echo "make gpu-check-cpu: report in target/gpu-check-cpu/gpu-report.md (exit $$rc)"; exit $$rc

# A model's scores on the held-out dev sets (PSNR-Y/SSIM-Y on three pair sets, NIQE on real rain).
eval-dev: release
	@MODEL="$(or $(MODEL),models/derain-lite.onnx)" PROVIDER="$(PROVIDER)" ./scripts/eval-dev.sh

# Does deraining help the detector? mAP@0.5 on rainy vs derained pairs (see README).
EVAL_DETECT = MODEL="$(or $(MODEL),$(wildcard models/derain-lite.onnx))" DETECTOR="$(DETECTOR)" PAIRS="$(PAIRS)" PROVIDER="$(PROVIDER)" \
	./scripts/eval-detect.sh
eval-detect: setup-runtime
	@$(EVAL_DETECT) --check-inputs
	$(CARGO) build --release --bin derain
	@$(EVAL_DETECT)

# Robustness suites (issue 8; README "Robustness suites"). Long, so not part of `make test`.
# soak: live source, 10,000 frames, restarts, derain+detector: memory, descriptors, threads, p99.
# `derain run` (phase 4) and its plugin come from the release build.
soak: release
	$(CARGO) bench -p gst-plugin-derain --bench soak

# latency: live 30 fps with a model slower than the frame rate, drop-late and never.
latency: setup
	$(CARGO) bench -p gst-plugin-derain --bench latency

# fuzz: each cargo-fuzz target for FUZZ_SECONDS (nightly and cargo-fuzz installed when missing).
# New inputs go to fuzz/corpus/ (not committed); crashes to fuzz/artifacts/<target>/: copy each
# into fuzz/regressions/<target>/ once fixed, and `make test` replays it from then on.
FUZZ_SECONDS ?= 180
FUZZ_TARGETS ?= model_card onnx_model frame_conversion detector_output footage_image footage_video
FUZZ_FLAGS := --sanitizer none --debug-assertions
fuzz: setup
	@rustup run nightly rustc --version > /dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	@cargo +nightly fuzz --version > /dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz build $(FUZZ_FLAGS)
	@mkdir -p fuzz/logs; failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  timeout=10; [ $$t = footage_video ] && timeout=90; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: fuzz/logs/$$t.log)"; \
	  if (cd fuzz && cargo +nightly fuzz run $(FUZZ_FLAGS) $$t corpus/$$t seeds/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=$$timeout -rss_limit_mb=4096 \
	      -print_final_stats=1) > fuzz/logs/$$t.log 2>&1; then \
	    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)' fuzz/logs/$$t.log; \
	  else \
	    tail -n 40 fuzz/logs/$$t.log; failed="$$failed $$t"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (see fuzz/artifacts/)"; exit 1; fi; \
	echo "fuzz: no crash, abort or hang in $(FUZZ_TARGETS)"

install: release
	install -d $(PREFIX_BIN) $(GST_USER_PLUGINS) $(DERAIN_LIB)
	install -m 755 target/release/derain $(PREFIX_BIN)/derain
	install -m 644 target/release/libgstderain.so $(GST_USER_PLUGINS)/libgstderain.so
	install -m 644 $$(readlink -f .deps/libonnxruntime.so) $(DERAIN_LIB)/libonnxruntime.so
	@# The GPU build (make setup GPU=1) loads its providers from beside the library.
	@for p in $$(dirname $$(readlink -f .deps/libonnxruntime.so))/libonnxruntime_providers_*.so; do \
		if [ -f "$$p" ]; then install -m 644 "$$p" $(DERAIN_LIB)/; fi; done
	@echo "installed: $(PREFIX_BIN)/derain, $(GST_USER_PLUGINS)/libgstderain.so, $(DERAIN_LIB)/libonnxruntime.so"
	@echo "check with: gst-inspect-1.0 derain"

uninstall:
	rm -f $(PREFIX_BIN)/derain $(GST_USER_PLUGINS)/libgstderain.so $(DERAIN_LIB)/libonnxruntime.so \
		$(DERAIN_LIB)/libonnxruntime_providers_*.so

clean:
	$(CARGO) clean
