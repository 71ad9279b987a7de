"""Scans in and out: NIfTI files and DICOM series, with exact geometry."""
