"""The search stage: one training loop (`loop`) and its learners, one per concept of the method:
the architecture (`architecture`), the augmentation policy (`policy`) and the hyper-parameters
(`hyper`); what it hands to derive (`result`) and its resume checkpoints (`checkpoint`)."""
