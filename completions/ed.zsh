#compdef ed
# ed completion, generated from the app by `ed completions DIR`; do not edit
_ed() {
  local -a commands
  commands=(
    'distmaps:Write squared row/column index-distance matrices for each levels token grid (store/distmaps.h5)'
    'features:Run the frozen backbone once per category prototypes and cached pooled features of train and test images'
    'train:Train one ED model per category from the cached features (computing missing store entries first)'
    'eval:Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv'
    'infer:Score any images with a checkpoint predictions.csv/.jsonl, heat maps, masks and raw maps'
    'export:Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration'
    'demo:Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it'
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  case $words[2] in
    distmaps)
      _arguments -s \
        '--store[Feature store directory (HDF5 files)]:value:_files' \
        '--backbone[timm model name with features_only support]:value:_files' \
        '--image-size[Input size S images become S x S]:value:_files' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:value:_files' \
        '--grid[Grid side H (H x H tokens) instead of a backbone; repeatable]:value:_files' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    features)
      _arguments -s \
        '--data-path[Dataset root one folder per category]:value:_files' \
        '--dataset[Layout of --data-path (see the READMEs table)]:value:_files' \
        '--category[Only this category (repeatable)]:value:_files' \
        '--store[Feature store directory (HDF5 files)]:value:_files' \
        '--backbone[timm model name with features_only support]:value:_files' \
        '--weights[Backbone weights file (offline use)]:value:_files' \
        '--random-init[Untrained backbone for tests and timing only (recorded)]' \
        '--image-size[Input size S images become S x S]:value:_files' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:value:_files' \
        '--normal-name[Name of the normal folder for --dataset folder]:value:_files' \
        '--device[auto, cpu, cuda, cudaN or mps]:value:_files' \
        '--batch-size[Images per batch]:value:_files' \
        '--num-workers[DataLoader worker processes for image decoding]:value:_files' \
        '--overwrite[Recompute categories already in the store]' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    train)
      _arguments -s \
        '--data-path[Dataset root one folder per category]:value:_files' \
        '--dataset[Layout of --data-path (see the READMEs table)]:value:_files' \
        '--category[Only this category (repeatable)]:value:_files' \
        '--store[Feature store directory (HDF5 files)]:value:_files' \
        '--out[Run folder checkpoints/<category>.pt, run.json, metrics]:value:_files' \
        '--backbone[timm model name with features_only support]:value:_files' \
        '--weights[Backbone weights file (offline use)]:value:_files' \
        '--random-init[Untrained backbone for tests and timing only (recorded)]' \
        '--image-size[Input size S images become S x S]:value:_files' \
        '--levels[timm feature indices, comma separated (2,3 = strides 8 and 16)]:value:_files' \
        '--normal-name[Name of the normal folder for --dataset folder]:value:_files' \
        '--epochs[Training epochs per category]:value:_files' \
        '--batch-size[Images per batch]:value:_files' \
        '--lr[Adam learning rate]:value:_files' \
        '--seed[Random seed (reset per category, as the reference)]:value:_files' \
        '--arch[ed, or fod (subtraction fusion, plain MLP, fixed temperature)]:value:_files' \
        '--intra[Intra-image (self-attention) branch]' \
        '--no-intra[Intra-image (self-attention) branch]' \
        '--inter[Inter-image (prototype cross-attention) branch]' \
        '--no-inter[Inter-image (prototype cross-attention) branch]' \
        '--layers[Encoder layers per level]:value:_files' \
        '--heads[Attention heads]:value:_files' \
        '--d-model[Model width per level, comma separated]:value:_files' \
        '--attn-out-proj[Apply the attention output projection (the reference discards it)]' \
        '--device[auto, cpu, cuda, cudaN or mps]:value:_files' \
        '--precision[fp32, bf16 or fp16 (autocast on GPU)]:value:_files' \
        '--eval-every[Evaluate on the test split every N epochs (0 never)]:value:_files' \
        '--select[last (honest), best-image or best-pixel (test-selected)]:value:_files' \
        '--calib-fraction[Share of normal train images held out for the threshold]:value:_files' \
        '--strategy[Under torchrun categories (one per rank) or ddp (one category data-parallel)]:value:_files' \
        '--jobs[Categories trained side by side in worker processes]:value:_files' \
        '--resume[Continue from the last completed epoch]' \
        '--num-workers[DataLoader worker processes for image decoding]:value:_files' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    eval)
      _arguments -s \
        '--run[Run folder written by `ed train --out`]:value:_files' \
        '--checkpoint[One checkpoint file instead of a run]:value:_files' \
        '--data-path[Dataset root one folder per category]:value:_files' \
        '--dataset[Layout of --data-path (default the checkpoints)]:value:_files' \
        '--category[Only this category (repeatable)]:value:_files' \
        '--store[Feature store (default the runs)]:value:_files' \
        '--reducer[Image score from the smoothed map max, mean or topk<ratio>]:value:_files' \
        '--pixel-map[Map for pixel metrics raw (unsmoothed, as the reference) or smoothed]:value:_files' \
        '--device[auto, cpu, cuda, cudaN or mps]:value:_files' \
        '--precision[fp32, bf16 or fp16 (autocast on GPU)]:value:_files' \
        '--batch-size[Images per batch]:value:_files' \
        '--save-maps[Write raw maps (.npy) and heat-map PNGs per test image]' \
        '--num-workers[DataLoader worker processes for image decoding]:value:_files' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    infer)
      _arguments -s \
        '--out[Output folder for predictions and heat maps]:value:_files' \
        '--batch-size[Images per batch]:value:_files' \
        '--device[auto, cpu, cuda, cudaN or mps]:value:_files' \
        '--precision[fp32, bf16 or fp16 (autocast on GPU)]:value:_files' \
        '--recursive[Descend into sub-folders]' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--csv[CSV rows on stdout]' \
        '--save-heatmaps[Heat-map PNGs, predicted masks and raw maps]' \
        '--no-save-heatmaps[Heat-map PNGs, predicted masks and raw maps]' \
        '--threshold[Override the checkpoints calibrated threshold (raw score)]:value:_files' \
        '--fail-on-anomaly[Exit 3 when any image is anomalous]' \
        '--num-workers[DataLoader worker processes for image decoding]:value:_files' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    export)
      _arguments -s \
        '--out[The .onnx file]:value:_files' \
        '--opset[ONNX opset version (13..20)]:value:_files' \
        '--batch[Batch size of the graph a number, or dynamic]:value:_files' \
        '--json[Machine-readable JSON on stdout (nothing else)]' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
    demo)
      _arguments -s \
        '--out[Demo folder (dataset, store, run, predictions)]:value:_files' \
        '--category[Only this category (repeatable)]:value:_files' \
        '--quick[A sub-minute version (smaller images, fewer epochs)]' \
        '--device[auto, cpu, cuda, cudaN or mps]:value:_files' \
        '--quiet[No progress on stderr]' \
        '--help[Show this message and exit]' \
        '*:file:_files' ;;
  esac
}
_ed "$@"
