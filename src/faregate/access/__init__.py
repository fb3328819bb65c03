"""Who may call what, and how much: virtual keys, users, teams, their limits and budgets."""
