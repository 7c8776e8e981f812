"""Token budgets: each agent's budgets fitted to the server; the guard between capped rounds."""

from dytopo.budget.guard import budget_stop
from dytopo.budget.plan import BudgetPlan, kv_layout, plan_budgets, plan_for_server

__all__ = ["BudgetPlan", "budget_stop", "kv_layout", "plan_budgets", "plan_for_server"]
