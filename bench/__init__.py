"""The pys3fs benchmark: raw boto3 vs pys3fs (and peers) on a local Ceph RGW. See run.py."""
