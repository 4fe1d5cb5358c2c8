"""fcnet grade: check students' implementations of the exercise, safely."""
