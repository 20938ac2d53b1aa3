"""Shared pose code, laid out by concept: every step imports from here, no step imports another.
Each subpackage's __init__ imports nothing, so a step loads only the modules it names (the slim
image's steps never load TensorFlow).

files/        what a step reads and writes, and where
  uris                local path or remote URI (the one rule); does a path lie inside a folder
  atomic              write a whole output folder or file under a temporary name, then rename
  outputs             the output rule: no step replaces a folder it did not write, or its input
  storage             every URI outside the pipeline root, by scheme: gs, s3/minio, http(s),
                      local; streaming reads, uploads, small objects by name, source versions
  storage_gcs         its gs:// backend (google-cloud-storage; STORAGE_EMULATOR_HOST)
  storage_s3          its s3:// and minio:// backend (boto3; AWS_ENDPOINT_URL and friends)
  remote_checkpoints  train's checkpoints mirrored to a bucket (written as they go, marker last;
                      resume; fingerprint; one training per prefix)
  integrity           checksums one step writes and the next verifies (shards in index.json,
                      .tflite sha256)
  checkpoint_manifest a checkpoint's manifest, written last: complete or ignored
  writer_lock         one writer per output folder (flock beside it, naming the holder)
  object_lock         one writer per bucket prefix (a lock object the store referees; publish,
                      train's checkpoints)
  steplog             logging set-up and the read / wrote / took summary every step prints
data/         the data set, from the release to the training batches
  keypoints           the keypoint set as data (KeypointSet: names in channel order, swap
                      partners, skeleton, OKS sigmas, joint weights, PCK's normalisation, the
                      seed's order); presets in keypoint_sets/*.yaml; sets from COCO files
  keypoint_files      the `keypoints` parameter's YAML file fetched from a bucket or https
  aic_release         the AI Challenger release's layout and visibility codes
  synthetic           the synthetic AI Challenger release behind `synthetic://N`
  packs               which images belong to which shard, and the per-shard packs convert
                      writes and shard reads
  records             the tf.train.Example layout of a shard (writer and parser share it)
  shard_index         a shard folder's index.json: its name, writing, reading, merging folders
  jpeg                the structural check that a JPEG is whole (shard, before decoding)
  pixels              how many pixels a picture's header may claim before anything decodes it;
                      a picture file read under that bound
  inputs              the tf.data input pipeline (training augmentation, evaluation crops)
models/       the networks and the files they are exported to
  networks/           MobileNetV2 CPM and Hourglass (Keras), built from a config; a model's
                      identity (family, the seed's output node and released file);
                      `python -m pose.models.networks MODEL` prints a network's size
  contract            the export contracts (seed: BGR 0..255, the seed's channel order;
                      aic: RGB / 255)
  metadata            a model's .json (freeze's model_info.json, the one beside each .tflite,
                      the seed's .json-less files): one builder, one reader
  tflite_runtime      loading, running and timing .tflite files with LiteRT
  range_equalisation  before int8: a concatenation's narrow inputs (the CPM stages' heatmaps)
                      stretched to its widest input's range, the inverse folded into the 1x1
                      convolution that reads it (the same float function)
  warm_start          weights from a seed's released .tflite or an earlier run's model.keras
training/     what train needs beyond the data and the network (components/train.py is the loop)
  config              the training config: every key, its default and type, the seed's names
  errors              TrainError, what every part of train raises for unusable input
  distribution        devices, the tf.distribute strategy, chief or worker (TF_CONFIG)
  objective           the loss (the seed's L2 per stage) and one step of it over the replicas
  fine_tuning         which layers keep their weights while the rest trains (frozen_layers)
  learning_rate       the schedule (exponential as the seed's, cosine, warm-up)
  budget              the time budget (max_minutes): a safety stop, never the schedule; counts
                      earlier runs of the same output
  reproducibility     the seed and op determinism: same config, data, seed -> same weights
  checkpoints         checkpoints and what rides along (history, progress, fingerprint);
                      resume, from the bucket too; multi-worker agreement on the step
  summaries           TensorBoard summaries (loss per stage, lr, images/s, PCKh, predictions)
  validation          PCKh@0.5 on the valid shards while training (no flip test)
evaluation/   the figures and what people read
  metrics             PCKh and OKS AP (pycocotools)
  results             results.json: evaluate's figures, its schema, reading and writing
  report              the evaluation's HTML report
  visualize           sample grids (heatmaps over images) for people and TensorBoard
  photos              the real photographs (photos/): ours and the seed's CPM on each, agreement
  contract_check      whether a model does what its .json's contract says (one rendered figure)

Two modules stand beside the subpackages, because each serves several of them and belongs to none:
codec         the heatmap codec: Gaussian targets (TF, for data.inputs), decoding (argmax,
              quarter, DARK) for training's PCKh, evaluation and the web demo, coordinates,
              flip test; like MMPose's codecs/, it sits between the data and the models
web_demo      the web demo (the page is web/): its build, the files publish uploads, a model's
              .json for the page; a product of its own, used by publish and
              `python -m pipeline demo`

The cluster contract's run-time rules are pipeline/cluster.py, beside the KFP code that uses them.
"""
