# The udiff demo, as a makefile: every stage is one command that reads and writes files, so make only
# redoes what changed. From the repository root:
#
#     make -f recipes/demo.mk            # train on the bundled 8x8 digits, then sample (CPU, a few minutes)
#     make -f recipes/demo.mk clean
#
# Rerunning after an interruption resumes training from run/demo/model.ckpt.safetensors.

RUN   ?= run/demo
UDIFF ?= udiff

all: $(RUN)/samples.png

$(RUN)/model.safetensors: recipes/digits.toml
	@mkdir -p $(RUN)
	$(UDIFF) train $< -o $@

# One sample per seed: the same 64 digits however the batches are cut.
$(RUN)/samples.png: $(RUN)/model.safetensors
	$(UDIFF) sample $< --seeds 0-63 -o $(RUN)/samples.safetensors --grid $@ --grid-scale 4
	@echo "samples: $(RUN)/samples.safetensors, picture: $@"

clean:
	rm -rf $(RUN)

.PHONY: all clean
