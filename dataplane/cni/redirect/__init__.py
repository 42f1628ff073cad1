"""In-pod traffic redirection: the rules as data (rules.py), what is installed and how to converge
(iptables_state.py), and applying them inside a pod netns (apply.py)."""
