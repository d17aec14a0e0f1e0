#compdef ed
# ed completion, generated from the app by `ed completions DIR`; do not edit
_ed() {
  local -a commands
  commands=(
    'distmaps:Write squared row/column index-distance matrices for each level'\''s token grid (store/distmaps.h5)'
    'features:Run the frozen backbone once per category\: prototypes and cached pooled features of train and test images'
    'train:Train one ED model per category from the cached features (computing missing store entries first)'
    'eval:Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv'
    'infer:Score any images with a checkpoint or an exported .onnx model\: predictions.csv/.jsonl, heat maps, masks, raw maps'
    'export:Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration'
    'report:One self-contained HTML page of an evaluated run\: protocol, metrics, curves, histograms, losses, worst images'
    'demo:Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it'
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case $words[2] in
    distmaps)
      _arguments -s \
        '(-s --store)-s[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-s --store)--store[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-b --backbone)-b[timm model name with features_only support]:backbone: ' \
        '(-b --backbone)--backbone[timm model name with features_only support]:backbone: ' \
        '--image-size[Input size S in pixels\: images become S x S]:image-size: ' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:levels: ' \
        '--grid[Grid side H (H x H tokens) instead of a backbone; repeatable]:grid: ' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    features)
      _arguments -s \
        '(-p --data-path)-p[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-p --data-path)--data-path[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-d --dataset)-d[Layout of --data-path (see the README'\''s table)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-d --dataset)--dataset[Layout of --data-path (see the README'\''s table)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-c --category)-c[Only this category (repeatable)]:category: ' \
        '(-c --category)--category[Only this category (repeatable)]:category: ' \
        '(-s --store)-s[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-s --store)--store[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-b --backbone)-b[timm model name with features_only support]:backbone: ' \
        '(-b --backbone)--backbone[timm model name with features_only support]:backbone: ' \
        '--weights[Backbone weights file (offline use)]:weights:_files' \
        '--random-init[Untrained backbone\: for tests and timing only (recorded)]' \
        '--image-size[Input size S in pixels\: images become S x S]:image-size: ' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:levels: ' \
        '--normal-name[Name of the normal folder for --dataset folder]:normal-name: ' \
        '--test-fraction[--dataset folder without test/\: this share of the normal images becomes the (normal-only) test split, picked by the seed]:test-fraction: ' \
        '--seed[Picks the --test-fraction images (ed train'\''s --seed)]:seed: ' \
        '--device[Where to compute; auto\: cuda, then mps, then cpu]:device:(auto cpu cuda mps)' \
        '--batch-size[Images per batch]:batch-size: ' \
        '--num-workers[DataLoader worker processes for image decoding]:num-workers: ' \
        '--overwrite[Recompute categories already in the store]' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    train)
      _arguments -s \
        '(-p --data-path)-p[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-p --data-path)--data-path[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-d --dataset)-d[Layout of --data-path (see the README'\''s table)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-d --dataset)--dataset[Layout of --data-path (see the README'\''s table)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-c --category)-c[Only this category (repeatable)]:category: ' \
        '(-c --category)--category[Only this category (repeatable)]:category: ' \
        '(-s --store)-s[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-s --store)--store[Feature store directory (HDF5 files)]:store:_files -/' \
        '(-o --out)-o[Run folder\: checkpoints/<category>.pt, run.json, metrics]:out:_files -/' \
        '(-o --out)--out[Run folder\: checkpoints/<category>.pt, run.json, metrics]:out:_files -/' \
        '(-b --backbone)-b[timm model name with features_only support]:backbone: ' \
        '(-b --backbone)--backbone[timm model name with features_only support]:backbone: ' \
        '--weights[Backbone weights file (offline use)]:weights:_files' \
        '--random-init[Untrained backbone\: for tests and timing only (recorded)]' \
        '--image-size[Input size S in pixels\: images become S x S]:image-size: ' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:levels: ' \
        '--normal-name[Name of the normal folder for --dataset folder]:normal-name: ' \
        '--test-fraction[--dataset folder without test/\: this share of the normal images becomes the (normal-only) test split, picked by the seed]:test-fraction: ' \
        '--epochs[Training epochs per category]:epochs: ' \
        '--batch-size[Images per training step]:batch-size: ' \
        '--lr[Adam learning rate]:lr: ' \
        '--seed[Random seed (reset per category, as the reference)]:seed: ' \
        '--arch[ed, or fod (subtraction fusion, plain MLP, fixed temperature)]:arch:(ed fod)' \
        '(--intra --no-intra)--intra[Intra-image (self-attention) branch]' \
        '(--intra --no-intra)--no-intra[Intra-image (self-attention) branch]' \
        '(--inter --no-inter)--inter[Inter-image (prototype cross-attention) branch]' \
        '(--inter --no-inter)--no-inter[Inter-image (prototype cross-attention) branch]' \
        '--layers[Encoder layers per level]:layers: ' \
        '--heads[Attention heads]:heads: ' \
        '--d-model[Model width per level, comma separated, or auto (C/2 rounded up to 32, >= 64)]:d-model: ' \
        '--attn-out-proj[Apply the attention output projection (the reference discards it)]' \
        '--device[Where to compute; auto\: cuda, then mps, then cpu]:device:(auto cpu cuda mps)' \
        '--precision[Autocast precision of the matrix products\: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)]:precision:(fp32 bf16 fp16)' \
        '--eval-every[Evaluate on the test split every N epochs (0\: never); with --select validation\: validate every N epochs (default 1)]:eval-every: ' \
        '--select[Which epoch'\''s weights\: last (honest), validation (best on held-out normal images with synthetic defects\: no test labels), or the best by a TEST metric (best-image, best-pixel\: test-selected, needs --eval-every)]:select:(last best-image best-pixel validation)' \
        '--val-fraction[--select validation\: share of the normal train images held out for validation]:val-fraction: ' \
        '--calib-fraction[Share of normal train images held out for the threshold]:calib-fraction: ' \
        '--strategy[Under torchrun\: categories (one per rank) or ddp (one category data-parallel)]:strategy:(auto categories ddp)' \
        '(-j --jobs)-j[Categories trained side by side in worker processes]:jobs: ' \
        '(-j --jobs)--jobs[Categories trained side by side in worker processes]:jobs: ' \
        '--optimizer[reference (one Adam, zero-filled grads\: torch 1.13'\''s extra momentum step) or per-level]:optimizer:(reference per-level)' \
        '--lr-schedule[constant (the reference) or cosine (per batch, to 0)]:lr-schedule:(constant cosine)' \
        '--warmup-epochs[Linear learning-rate warm-up over this many epochs]:warmup-epochs: ' \
        '--average[Weights kept\: none (the last step'\''s), ema (moving average after every step) or swa (equal average of the epochs from --swa-start); the average is what is evaluated, selected and saved]:average:(none ema swa)' \
        '--ema-decay[--average ema\: decay per step]:ema-decay: ' \
        '--swa-start[--average swa\: first epoch in the average (0\: the middle epoch)]:swa-start: ' \
        '--score[Per-token anomaly score\: rec-kl (reconstruction error x the attention-vs-prior KL; the default, steadier than the paper'\''s), ed (the paper'\''s\: error x (max(s) - s), s a per-image softmax of the KL) or rec (reconstruction error); recorded in the checkpoint]:score:(ed rec rec-kl)' \
        '--resume[Continue from the last completed epoch]' \
        '--overwrite[Replace the checkpoints of an existing run folder and remove its stale metrics, predictions and maps]' \
        '--num-workers[DataLoader worker processes for image decoding]:num-workers: ' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    eval)
      _arguments -s \
        '(-r --run)-r[Run folder written by \`ed train --out\`]:run:_files -/' \
        '(-r --run)--run[Run folder written by \`ed train --out\`]:run:_files -/' \
        '--checkpoint[One checkpoint file instead of a run]:checkpoint:_files' \
        '(-p --data-path)-p[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-p --data-path)--data-path[Dataset root\: one folder per category]:data-path:_files -/' \
        '(-d --dataset)-d[Layout of --data-path (default\: the checkpoint'\''s)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-d --dataset)--dataset[Layout of --data-path (default\: the checkpoint'\''s)]:dataset:(mvtec btad mvtec3d folder)' \
        '(-c --category)-c[Only this category (repeatable)]:category: ' \
        '(-c --category)--category[Only this category (repeatable)]:category: ' \
        '(-s --store)-s[Feature store (default\: the run'\''s)]:store:_files -/' \
        '(-s --store)--store[Feature store (default\: the run'\''s)]:store:_files -/' \
        '--reducer[Image score from the smoothed map\: its max, mean, or mean of the top share R (0 < R <= 1)]:reducer:(max mean)' \
        '--score[Per-token score (ed, rec, rec-kl); default\: the one each checkpoint was calibrated with]:score:(ed rec rec-kl)' \
        '--pixel-map[Map for pixel metrics\: raw (unsmoothed, as the reference) or smoothed]:pixel-map:(raw smoothed)' \
        '--device[Where to compute; auto\: cuda, then mps, then cpu]:device:(auto cpu cuda mps)' \
        '--precision[Autocast precision of the matrix products\: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)]:precision:(fp32 bf16 fp16)' \
        '--batch-size[Images per batch]:batch-size: ' \
        '--save-maps[Write raw maps (.npy) and heat-map PNGs per test image]' \
        '--num-workers[DataLoader worker processes for image decoding]:num-workers: ' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    infer)
      _arguments -s \
        '(-o --out)-o[Output folder for predictions and heat maps]:out:_files -/' \
        '(-o --out)--out[Output folder for predictions and heat maps]:out:_files -/' \
        '--batch-size[Images per batch]:batch-size: ' \
        '--device[Where to compute; auto\: cuda, then mps, then cpu]:device:(auto cpu cuda mps)' \
        '--precision[Autocast precision of the matrix products\: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units (AVX512-BF16 or AMX)]:precision:(fp32 bf16 fp16)' \
        '(-R --recursive)-R[Descend into sub-folders]' \
        '(-R --recursive)--recursive[Descend into sub-folders]' \
        '--max-pixels[Larger images are failed rows, decided from the header before decoding]:max-pixels: ' \
        '--shard[Score the I-th of N contiguous parts of the inputs (0-based); the last part to finish merges]:shard: ' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--csv[CSV rows on stdout]' \
        '--save-heatmaps[Heat-map panels and masks of which images; auto\: all up to 1000 inputs, else anomalous]:save-heatmaps:(auto all anomalous none)' \
        '--no-save-heatmaps[The same as --save-heatmaps none]' \
        '--save-raw-maps[Raw anomaly maps (.npy) of every image]' \
        '--resume[Score only the images without a row in --out (same model)]' \
        '--overwrite[Replace the predictions and heat maps in --out]' \
        '--threshold[Override the checkpoint'\''s calibrated threshold (raw score)]:threshold: ' \
        '--fail-on-anomaly[Exit 3 when any image is anomalous]' \
        '--engine[ray\: score in a Ray Data pipeline (pip install '\''edcli\[ray\]'\'')]:engine:(torch ray)' \
        '--num-workers[DataLoader worker processes for image decoding]:num-workers: ' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    export)
      _arguments -s \
        '(-o --out)-o[The .onnx file]:out:_files' \
        '(-o --out)--out[The .onnx file]:out:_files' \
        '--opset[ONNX opset version (13..20)]:opset: ' \
        '--batch[Batch size of the graph\: a number, or dynamic]:batch:(dynamic)' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    report)
      _arguments -s \
        '(-o --out)-o[HTML file to write]:out:_files' \
        '(-o --out)--out[HTML file to write]:out:_files' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
    demo)
      _arguments -s \
        '(-o --out)-o[Demo folder (dataset, store, run, predictions)]:out:_files -/' \
        '(-o --out)--out[Demo folder (dataset, store, run, predictions)]:out:_files -/' \
        '(-c --category)-c[Only this category (repeatable)]:category: ' \
        '(-c --category)--category[Only this category (repeatable)]:category: ' \
        '--quick[A sub-minute version (fewer images and epochs)]' \
        '--seed[Training seed (the dataset stays the same)]:seed: ' \
        '--device[Where to compute; auto\: cuda, then mps, then cpu]:device:(auto cpu cuda mps)' \
        '(-q --quiet)-q[No progress on stderr]' \
        '(-q --quiet)--quiet[No progress on stderr]' \
        '(-h --help)-h[Show this message and exit]' \
        '(-h --help)--help[Show this message and exit]' \
        '*:file:_files' ;;
  esac
}
_ed "$@"
