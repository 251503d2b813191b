import cv2
import numpy as np
from skimage import data

from services.vision.faces import HaarFaceDetector


def test_finds_the_astronauts_face_and_nothing_in_a_blank_image() -> None:
    detector = HaarFaceDetector(min_face_px=40, max_side=1280)
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    faces = detector.detect_one(gray)
    assert len(faces) == 1
    face = faces[0].box
    # The face is in the upper middle of the 512x512 photo.
    assert 150 < face.x + face.width / 2 < 300 and 50 < face.y + face.height / 2 < 200
    # Haar gives neither keypoints nor a score.
    assert faces[0].right_eye is None and faces[0].keypoints == () and faces[0].score == 0.0
    assert detector.detect_one(np.full((200, 200), 128, np.uint8)) == []


def test_boxes_are_in_original_coordinates_when_the_image_is_shrunk() -> None:
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    small = HaarFaceDetector(40, 1280).detect_one(gray)[0].box
    big = cv2.resize(gray, (2048, 2048))  # 4x: detection runs on a 512 px copy, boxes come back x4
    (found,) = HaarFaceDetector(40, 512).detect_one(big)
    assert abs(found.box.x - 4 * small.x) <= 8 and abs(found.box.y - 4 * small.y) <= 8
    assert abs(found.box.width - 4 * small.width) <= 16


def test_faces_are_sorted_largest_first() -> None:
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    face = gray[30:230, 130:330]
    canvas = np.full((400, 700), 120, np.uint8)
    canvas[10:210, 10:210] = face
    canvas[250:350, 450:550] = cv2.resize(face, (100, 100))
    faces = HaarFaceDetector(40, 1280).detect_one(canvas)
    assert len(faces) == 2
    assert faces[0].box.area > faces[1].box.area


async def test_detect_takes_a_batch_and_colour_images() -> None:
    rgb = data.astronaut()
    found = await HaarFaceDetector(40, 1280).detect([rgb, np.full((100, 100, 3), 128, np.uint8)])
    assert [len(faces) for faces in found] == [1, 0]
