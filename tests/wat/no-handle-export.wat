;; A valid component that exports nothing: it does not implement the trigger world.
(component)
