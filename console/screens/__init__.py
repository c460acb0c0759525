"""The console's screens: one per view (boards, board detail, logs, enrollment, apps) and modals."""
