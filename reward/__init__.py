"""PIGReward: the frozen personalized judge (reasoner, judge, parsing, user context, backends)."""
