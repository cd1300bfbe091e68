"""What comes after training, read from run folders: the one run reader (`runs.py`), the HTML report, the W&B
dashboard, and the offline W&B record reader."""
