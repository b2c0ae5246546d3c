"""Face tools: detection, 68-point landmarks, face tracks and crops, lip masks, identity embeddings, motion.

Everything works offline with dlib (``dlib-bin`` + ``face_recognition_models``); the ``face-alignment`` backend
is used when its weights are present or can be fetched. Images are ``uint8 (H, W, 3)`` RGB; landmarks are the
iBUG 68-point layout in pixel ``(x, y)``.

Quick tour::

    from skimage.data import astronaut
    from fantasytalking.face import DlibLandmarker, detect_face_landmarks, lip_mask, align_face, DlibFaceEncoder

    box, lm = detect_face_landmarks(astronaut(), DlibLandmarker())  # FaceBox, (68, 2)
    mask = lip_mask(lm, 512, 512)  # (1, 512, 512) uint8
    face = align_face(astronaut(), lm, 112)  # (112, 112, 3) uint8, ArcFace layout
    emb = DlibFaceEncoder().encode(astronaut(), lm)  # (128,) float32
"""

from fantasytalking.face.align import ARCFACE_TEMPLATE_112, align_face, five_points, similarity_transform
from fantasytalking.face.embed import (
    ArcFaceEncoder,
    ConcatFaceEncoder,
    DlibFaceEncoder,
    FaceEncoder,
    HeadThumbnailEncoder,
    make_face_encoder,
    parse_face_encoder_spec,
)
from fantasytalking.face.landmarks import (
    FACE_ALIGNMENT_FILES,
    LIP_INNER,
    LIP_OUTER,
    NUM_LANDMARKS,
    DlibLandmarker,
    FaceAlignmentLandmarker,
    FaceBox,
    LandmarkBackend,
    NoFaceError,
    as_rgb_uint8,
    box_from_landmarks,
    detect_face_landmarks,
    dlib_model_path,
    face_alignment_weights_present,
    make_landmarker,
)
from fantasytalking.face.mask import DEFAULT_LIP_MARGIN, lip_mask
from fantasytalking.face.motion import (
    HeadShoulderProxy,
    PoseSource,
    body_intensity,
    facial_intensity,
    intensity_stats,
    normalise_intensity,
    normalised_variance,
)
from fantasytalking.face.track import CropBox, FaceTrack, clip_crop_box, crop_frames, landmarks_to_crop, track_face

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DEFAULT_LIP_MARGIN",
    "FACE_ALIGNMENT_FILES",
    "LIP_INNER",
    "LIP_OUTER",
    "NUM_LANDMARKS",
    "ArcFaceEncoder",
    "ConcatFaceEncoder",
    "CropBox",
    "DlibFaceEncoder",
    "DlibLandmarker",
    "FaceAlignmentLandmarker",
    "FaceBox",
    "FaceEncoder",
    "FaceTrack",
    "HeadShoulderProxy",
    "HeadThumbnailEncoder",
    "LandmarkBackend",
    "NoFaceError",
    "PoseSource",
    "align_face",
    "as_rgb_uint8",
    "body_intensity",
    "box_from_landmarks",
    "clip_crop_box",
    "crop_frames",
    "detect_face_landmarks",
    "dlib_model_path",
    "face_alignment_weights_present",
    "facial_intensity",
    "five_points",
    "intensity_stats",
    "landmarks_to_crop",
    "lip_mask",
    "make_face_encoder",
    "make_landmarker",
    "normalise_intensity",
    "normalised_variance",
    "parse_face_encoder_spec",
    "similarity_transform",
    "track_face",
]
