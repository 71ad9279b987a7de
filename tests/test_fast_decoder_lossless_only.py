"""The libjpeg-turbo plugin is asked for JPEG Lossless only: a lossy JPEG is left to pydicom's own decoders.

Two JPEG decoders may round a lossy frame's inverse DCT differently, which would change loaded voxel values; lossless
decoding is exact by definition (``medgan.io.dicom_codecs`` module docstring).
"""

from __future__ import annotations

import pytest
from pydicom import uid

from medgan.io.dicom_codecs import PLUGIN, plugin_for


@pytest.mark.parametrize("syntax", [uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless, uid.JPEG2000])
def test_lossy_syntaxes_get_pydicoms_own_decoders(syntax):
    assert plugin_for(syntax) == ""


@pytest.mark.parametrize("syntax", [uid.JPEGLossless, uid.JPEGLosslessSV1])
def test_lossless_syntaxes_get_the_fast_plugin(syntax):
    pytest.importorskip("imagecodecs")
    assert plugin_for(syntax) == PLUGIN
