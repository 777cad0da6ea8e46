"""Data: streaming readers, curation, deduplication and packing into token shards."""
