# The udiff demo, as a makefile: every stage is one command that reads and writes files, so make only
# redoes what changed. From the repository root:
#
#     make -f recipes/demo.mk            # fit, train, sample and evaluate on the bundled 8x8 digits (CPU, minutes)
#     make -f recipes/demo.mk clean
#
# Rerunning after an interruption resumes training from run/demo/model.ckpt.safetensors.

RUN   ?= run/demo
UDIFF ?= udiff

all: $(RUN)/samples.png $(RUN)/nll.json

# The basis stage: data mean and per-component variances (pixel basis here; pca, dct, haar likewise).
$(RUN)/basis.safetensors: recipes/digits.toml
	@mkdir -p $(RUN)
	$(UDIFF) fit-basis $< -o $@

$(RUN)/model.safetensors: recipes/digits.toml $(RUN)/basis.safetensors
	$(UDIFF) train $< --basis $(RUN)/basis.safetensors -o $@

# One sample per seed: the same 64 digits however the batches are cut.
$(RUN)/samples.png: $(RUN)/model.safetensors
	$(UDIFF) sample $< --seeds 0-63 -o $(RUN)/samples.safetensors --grid $@ --grid-scale 4
	@echo "samples: $(RUN)/samples.safetensors, picture: $@"

# VDM's variational bound in bits/dim on the whole data set (EMA weights), as one JSON object.
$(RUN)/nll.json: $(RUN)/model.safetensors
	$(UDIFF) eval-nll $< --data digits --json > $@.tmp && mv $@.tmp $@
	@cat $@

clean:
	rm -rf $(RUN)

.PHONY: all clean
