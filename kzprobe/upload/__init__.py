"""Opt-in submission of records to an OONI collector (``[upload] ooni_collector``)."""
