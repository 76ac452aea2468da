#!/usr/bin/env bash
# The short check of results/memory/README.md (copy memory, delay 50, 300 steps, seed 0).
# Run from the repository root; took 3.5 min (GRU) and 17.6 min (suRNN, cpu implementation)
# of training on the shared 2-core VM while other jobs ran.
set -euo pipefail
COMMON=(experiment=memory/copy_memory_cpu task.options.delay=50 trainer.max_steps=300
        trainer.eval_every=100 trainer.ckpt_every=100 trainer.progress=false
        output_dir=outputs/short_check)
python run.py "${COMMON[@]}" model=surnn model.options.gate.init_rate=0.17 \
    model.options.gate.target_rate=0.17 model.options.gate.rate_penalty=1.0
python run.py "${COMMON[@]}" model=gru
python scripts/plot_memory.py outputs/short_check --out results/memory/short_check
