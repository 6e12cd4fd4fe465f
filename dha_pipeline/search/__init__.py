"""The search stage: one training loop (`loop`) and its learners behind one protocol (`learner`), one per
concept of the method: the architecture b (`architecture`), the augmentation policy tau (`policy`), the
augmented share p (`fraction`) and the hyper-parameters eta (`hyper`); the stage's work and outputs
(`run`, `observe`) and what it hands to derive (`result`)."""
