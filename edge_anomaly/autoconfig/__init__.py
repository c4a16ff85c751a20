"""Automatic configuration: choosing a template and its key hyperparameters without defect images."""
