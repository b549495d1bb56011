"""Mask decoders: LTS's light head, MARIS's mask decoder, HARIS's query decoder, pixel decoders."""
