"""One router per resource: auth, users, projects, features (labels), tasks, imagery, jobs."""
