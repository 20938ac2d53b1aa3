"""Shared pose code: every pipeline step imports from here, no step imports another step.

keypoints  the AI Challenger keypoint spec (names, order, flip pairs, skeleton, OKS sigmas)
steplog    logging set-up and the read/wrote/took summary every step prints
storage    URIs: gs:// (honours STORAGE_EMULATOR_HOST), file://, local paths
records    the tf.train.Example layout of a shard (writer and parser share it)
inputs     the tf.data input pipeline (training augmentation, evaluation crops)
heatmaps   heatmap encoding (Gaussian targets, TensorFlow ops)
decoding   heatmap decoding to keypoints (argmax + sub-pixel refinement)
metrics    PCKh and OKS AP (pycocotools)
networks   MobileNetV2 CPM and Hourglass (Keras)
"""
