"""Where questions and answers come from, and how an answer is graded."""
