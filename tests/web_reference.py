"""The web demo's still-image mode in Python, for the browser tests (web/pose.js is its JavaScript
twin): the picture padded (black) to a centred square, resized bilinearly to the model's input, fed in
the model's contract (pose.models.contract), decoded by pose.codec with refine="quarter" (argmax, a
quarter pixel towards the higher neighbour: what the page does), mapped back to input pixels by the
codec and to the picture by the square's scale and offset."""
from pathlib import Path

from pose.data import keypoints
from pose.web_demo import DemoError, model_metadata


def square_input(bgr, input_size: int) -> tuple:
    """The picture padded (black) to a centred square and resized bilinearly to input_size, as float32 BGR 0..255."""
    import cv2
    import numpy as np

    height, width = bgr.shape[:2]
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    padded = cv2.copyMakeBorder(bgr.astype(np.float32), top, side - height - top, left, side - width - left,
                                cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(padded, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return resized, {"side": side, "left": left, "top": top}


def reference_keypoints(model: str, picture: str, metadata: dict | None = None) -> dict:
    """{"order", "keypoints": [[x, y, score] x 14]} in the picture's pixels, as the page's still-image mode makes
    them, and "scale": picture pixels per model input pixel."""
    import cv2
    import numpy as np

    from pose.codec import HeatmapCodec
    from pose.models import contract, tflite_runtime

    model_path = Path(model)
    values = metadata or model_metadata(model_path)
    try:
        model_contract = contract.from_metadata(values, str(model_path.with_suffix(".json")))
    except contract.ContractError as error:
        raise DemoError(str(error)) from error
    bgr = cv2.imread(str(picture), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DemoError(f"{picture}: not an image cv2 can read")
    size, stride = int(values["input_size"]), int(values["output_stride"])
    image, square = square_input(bgr, size)
    image = contract.model_input(image, model_contract)
    interpreter = tflite_runtime.load(model_path, num_threads=1)
    heatmaps = tflite_runtime.run(interpreter, image[None])
    in_input, scores = HeatmapCodec(size, stride, refine="quarter").decode_to_input(heatmaps)
    in_picture = (in_input[0] + 0.5) * (square["side"] / size) - 0.5 - np.array([square["left"], square["top"]])
    channel_joint = [keypoints.NAMES.index(name) for name in model_contract["channel_order"]]
    result = [None] * keypoints.NUM_KEYPOINTS
    for channel, joint in enumerate(channel_joint):
        result[joint] = [float(in_picture[channel, 0]), float(in_picture[channel, 1]), float(scores[0, channel])]
    return {"order": list(keypoints.NAMES), "keypoints": result, "scale": square["side"] / size}
