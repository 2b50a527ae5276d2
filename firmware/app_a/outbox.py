# The RAM buffer of upstream messages waiting for the broker. Bounded: at the limit the oldest
# message is dropped and counted (`dropped` in health); newer state is worth more than older.


class Outbox:
    def __init__(self, limit=32):
        self.limit = limit
        self.items = []
        self.dropped = 0

    def __len__(self):
        return len(self.items)

    def put(self, item):
        if len(self.items) >= self.limit:
            self.items.pop(0)
            self.dropped += 1
        self.items.append(item)

    def take(self):
        return self.items.pop(0) if self.items else None

    def put_back(self, item):
        # A message whose send failed goes back to the front. If the buffer filled meanwhile, it
        # is the oldest one, so it is the one dropped.
        if len(self.items) >= self.limit:
            self.dropped += 1
            return
        self.items.insert(0, item)
