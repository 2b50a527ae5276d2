"""Serial sensors: frame parsers (pure) and an asyncio reader over pyserial."""
