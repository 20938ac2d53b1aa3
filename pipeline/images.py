"""Container images the steps run in. Built from images/; override the registry or tag at compile time
with POSE_IMAGE_REGISTRY / POSE_IMAGE_TAG."""
import os

REGISTRY = os.environ.get("POSE_IMAGE_REGISTRY", "ghcr.io/pose-pipeline")
TAG = os.environ.get("POSE_IMAGE_TAG", "0.1.0")
CPU_IMAGE = f"{REGISTRY}/pose-cpu:{TAG}"  # every step but training
GPU_IMAGE = f"{REGISTRY}/pose-gpu:{TAG}"  # training
