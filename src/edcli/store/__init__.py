"""The HDF5 feature store: distance matrices, per-category cached backbone features and validation sets."""

from edcli.store.distmaps import DISTMAPS_NAME, distance_matrices, read_distmaps, write_distmaps
from edcli.store.hdf5 import file_size
from edcli.store.keys import (
    FEATURES_DIR,
    KEY_FIELDS,
    SCHEMA_VERSION,
    feature_key,
    features_path,
    find_features,
    list_feature_files,
)
from edcli.store.reader import FeatureFile, Index
from edcli.store.validation import VALIDATION_DIR, ValidationFile, validation_path, write_validation
from edcli.store.writer import FeatureWriter

__all__ = [
    "DISTMAPS_NAME",
    "FEATURES_DIR",
    "KEY_FIELDS",
    "SCHEMA_VERSION",
    "VALIDATION_DIR",
    "FeatureFile",
    "FeatureWriter",
    "Index",
    "ValidationFile",
    "distance_matrices",
    "feature_key",
    "features_path",
    "file_size",
    "find_features",
    "list_feature_files",
    "read_distmaps",
    "validation_path",
    "write_distmaps",
    "write_validation",
]
