"""Readers of keypoint data sets by source, for convert: where each layout's files lie (layouts), one
reader per source (aic: the official AI Challenger release; seed: the seed project's copy of it;
coco: COCO-format files, COCO 2017, CVAT and Label Studio exports) and the checks every record
passes (checks). Each reader yields records of one shape (checks.Record), people's keypoints in
COCO visibility codes, in the order of the keypoint set it reports.
"""
