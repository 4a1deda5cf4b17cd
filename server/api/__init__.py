"""Servicers: thin translations between protobuf messages and domain calls."""
